//! Two docs replicas on shared engines (docs/scale-out.md): records, blobs
//! and the search index in one PostgreSQL database, jobs in another. A
//! document uploaded through replica A is listed, searched, downloaded,
//! answered and deleted through replica B. The gateway of `echod up`
//! reaches docs through a proxy the test points at A, then at B; A is
//! `up`'s own docs (configured by variables), B an `echod serve docs`
//! (configured by flags).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use echo_testkit::PgTestDb;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::docs::{User, add_user};
use super::{echod, start, start_up, up_on_free_ports};

/// A TCP proxy to one upstream at a time. Switching closes the connections
/// open to the former one, so the gateway's pooled connections cannot keep
/// reaching it.
struct SwitchingProxy {
    addr: String,
    upstream: Arc<Mutex<String>>,
    switched: watch::Sender<u64>,
}

impl SwitchingProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let upstream = Arc::new(Mutex::new(String::new()));
        let (switched, _) = watch::channel(0);
        let (target, switches) = (Arc::clone(&upstream), switched.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                let to = target.lock().unwrap().clone();
                let mut switch = switches.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = switch.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            upstream,
            switched,
        }
    }

    /// Sends every later connection to `upstream`; closes those open.
    async fn point_at(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.to_owned();
        self.switched.send_modify(|n| *n += 1);
        // Long enough for the gateway's pool to see its connections close.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The gateway's docs routes, through the proxy at `proxy`.
fn routes_through(proxy: &str) -> String {
    ["/api/documents:/v1/documents", "/api/query:/v1/query"]
        .iter()
        .map(|route| {
            let (prefix, path) = route.split_once(':').unwrap();
            format!(
                "[[gateway.routes]]\nprefix = \"{prefix}\"\nupstream = \"http://{proxy}{path}\"\n\
                 audience = \"docs\"\nstrip_prefix = true\ntimeout = \"120s\"\n\n"
            )
        })
        .collect()
}

/// Where both replicas keep blobs (`ECHO_DOCS_BLOB_URL`).
#[derive(Clone, Copy, Debug)]
enum Blobs {
    /// The docs database.
    Postgres,
    /// JetStream's object store on the machine's NATS, bucket `ECHO_DOCS`.
    Nats,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_uploaded_through_one_replica_is_served_by_the_other() {
    uploaded_through_one_replica_served_by_the_other(Blobs::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_blobs_on_nats_serve_each_others_uploads() {
    uploaded_through_one_replica_served_by_the_other(Blobs::Nats).await;
}

/// The blob of `bytes` in the bucket `ECHO_DOCS` of the machine's NATS, if
/// there (opened by name, not by Echo's constant), as text.
async fn in_echo_docs_bucket(bytes: &[u8]) -> Option<String> {
    let store = echo_docs::NatsBlobStore::connect(
        &echo_testkit::nats_url(),
        &echo_crypto::TrustedRoots::system(),
        "ECHO_DOCS",
    )
    .await
    .unwrap();
    echo_docs::BlobStore::read(&store, echo_docs::Blob::new(bytes.to_vec()).digest())
        .await
        .ok()
        .map(|stored| String::from_utf8_lossy(&stored).into_owned())
}

async fn uploaded_through_one_replica_served_by_the_other(blobs: Blobs) {
    let docs_db = PgTestDb::create("docs_replicas_docs").await;
    let queue_db = PgTestDb::create("docs_replicas_queue").await;
    let blob_url = match blobs {
        Blobs::Postgres => docs_db.url.clone(),
        Blobs::Nats => echo_testkit::nats_url(),
    };
    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "alice");
    add_user(dir.path(), "bob");
    let proxy = SwitchingProxy::start().await;
    let config = dir.path().join("echo.toml");
    std::fs::write(&config, routes_through(&proxy.addr)).unwrap();

    // Replica A: `up`'s docs, by variables, with the worker and parser.
    let mut up = up_on_free_ports(dir.path());
    up.env("ECHO_CONFIG", &config)
        .env("ECHO_DOCS_DATABASE_URL", &docs_db.url)
        .env("ECHO_DOCS_BLOB_URL", &blob_url)
        .env("ECHO_DOCS_SEARCH", "postgres")
        .env("ECHO_QUEUE_URL", &queue_db.url);
    let server = start_up(up);
    // Replica B: its own process and data directory (each replica spools
    // its audit events in its own), the same client secret; nothing of
    // docs is kept in either directory.
    let b_dir = echo_testkit::data_dir();
    let mut serve = echod(b_dir.path());
    serve
        .env(
            "ECHO_DOCS_CLIENT_SECRET_FILE",
            dir.path().join("docs-client.secret"),
        )
        .args(["serve", "docs", "--listen", "127.0.0.1:0", "--issuer"])
        .arg(format!("http://{}", server.ready[0]))
        .arg("--audit-url")
        .arg(format!("http://{}", server.ready[1]))
        .args(["--docs-database-url", &docs_db.url])
        .args(["--blob-url", &blob_url])
        .args(["--search", "postgres"])
        .args(["--queue-url", &queue_db.url]);
    let replica_b = start(serve, 1);
    assert!(
        !dir.path().join("docs").exists(),
        "nothing docs keeps is local"
    );

    proxy.point_at(&server.ready[3]).await;
    let mut alice = User::sign_in(&server, "alice").await;
    // The NATS bucket is the machine's, shared by every run: the bytes (so
    // the blob's name) are this run's own.
    let text = format!(
        "The lighthouse keeper logs seventeen ships each foggy evening. Run {}-{}.",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let text = text.as_str();
    let id = alice
        .upload(&[("log.txt", text.as_bytes().to_vec())])
        .await
        .remove(0);
    let view = alice.wait_for(&id, Duration::from_secs(60)).await;
    assert_eq!(view["status"], "done", "{view}");
    if let Blobs::Nats = blobs {
        assert_eq!(
            in_echo_docs_bucket(text.as_bytes()).await.as_deref(),
            Some(text)
        );
    }

    proxy.point_at(&replica_b.addr).await;
    let (status, listed) = alice
        .api(reqwest::Method::GET, "/api/documents", None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["documents"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["documents"][0]["status"], "done", "{listed}");
    let (status, content) = alice
        .download(&format!("/api/documents/{id}/content"))
        .await;
    assert_eq!((status, content.as_str()), (200, text));
    let answer = alice
        .ask("How many ships does the lighthouse keeper log?")
        .await;
    assert_eq!(
        answer["citations"][0]["document_id"],
        id.as_str(),
        "{answer}"
    );
    assert!(
        answer["answer"]
            .as_str()
            .unwrap()
            .contains("seventeen ships"),
        "{answer}"
    );
    // Another user asks B the same: nothing of alice's.
    let mut bob = User::sign_in(&server, "bob").await;
    let answer = bob
        .ask("How many ships does the lighthouse keeper log?")
        .await;
    assert_eq!(answer["citations"], serde_json::json!([]), "{answer}");

    // Deleted through B: gone through A, its chunks and blob with it.
    let (status, _) = alice
        .api(
            reqwest::Method::DELETE,
            &format!("/api/documents/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    proxy.point_at(&server.ready[3]).await;
    let (status, _) = alice
        .api(reqwest::Method::GET, &format!("/api/documents/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let answer = alice.ask("lighthouse keeper ships").await;
    assert_eq!(answer["citations"], serde_json::json!([]), "{answer}");
    let pool = sqlx::PgPool::connect(&docs_db.url).await.unwrap();
    let (chunks, blob_rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM docs_chunks), (SELECT COUNT(*) FROM docs_blobs)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((chunks, blob_rows), (0, 0));
    pool.close().await;
    if let Blobs::Nats = blobs {
        assert_eq!(in_echo_docs_bucket(text.as_bytes()).await, None);
    }

    drop(replica_b);
    drop(server);
    docs_db.drop_db().await;
    queue_db.drop_db().await;
}

#[test]
fn postgres_search_needs_docs_on_postgres_and_backends_are_named() {
    let dir = echo_testkit::data_dir();
    for (args, expected) in [
        (&["--search", "postgres"][..], "ECHO_DOCS_DATABASE_URL"),
        (&["--search", "elastic"], "expected tantivy or postgres"),
        (&["--blob-url", "s3://bucket"], "ECHO_DOCS_BLOB_URL"),
    ] {
        let out = echod(dir.path())
            .args(["serve", "docs", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
